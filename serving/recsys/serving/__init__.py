"""recsys.serving"""
