"""shrinkpert.metrics"""
