"""recsys.platform"""
