//! Datasets: readers, catalog, splits, partitioners.
