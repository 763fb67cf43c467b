"""shrinkpert.calibration"""
