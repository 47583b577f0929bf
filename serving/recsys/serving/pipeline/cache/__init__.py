"""Result-cache stage and the Redis result cache it reads and writes."""
