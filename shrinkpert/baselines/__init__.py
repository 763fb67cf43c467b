"""shrinkpert.baselines"""
