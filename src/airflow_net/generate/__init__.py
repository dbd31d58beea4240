"""Generation strategies (direct, best_of_n, repair) over any chat backend."""
