"""What the steps keep: the model bundle (bundle.py) and the content-addressed step folders (cache.py)."""
