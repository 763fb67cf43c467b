"""shrinkpert.data"""
