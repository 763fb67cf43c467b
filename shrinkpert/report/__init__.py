"""shrinkpert.report"""
