"""shrinkpert.reference"""
