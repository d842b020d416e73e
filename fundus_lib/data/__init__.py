"""The data path: readers, the synthetic generator, preprocessing, the cache, splits, datasets."""
