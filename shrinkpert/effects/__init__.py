"""shrinkpert.effects"""
