"""recsys.training"""
