"""recsys.features"""
