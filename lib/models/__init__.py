"""Models, one readable file each (nanoGPT style). Each follows RecBole's contract:
``calculate_loss(batch) -> scalar`` and ``full_sort_predict(batch) -> (B, n_items)`` scores."""
