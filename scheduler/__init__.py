"""The scheduler: profiles, link estimation, the cost model and split policies."""
