"""recsys.experiments"""
