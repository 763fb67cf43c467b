"""shrinkpert.weights"""
