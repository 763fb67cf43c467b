"""shrinkpert.biology"""
