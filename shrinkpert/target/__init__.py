"""shrinkpert.target"""
