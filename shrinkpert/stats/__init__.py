"""shrinkpert.stats"""
