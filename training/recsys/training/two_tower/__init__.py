"""Two-tower retrieval: torch model, Ray Train job, store export and a Recommender wrapper."""
