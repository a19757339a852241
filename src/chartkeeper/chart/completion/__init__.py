"""Record completion: quantitative analysis of discharged records and its deficiency worklist."""
