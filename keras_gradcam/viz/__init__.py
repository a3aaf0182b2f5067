"""Pictures: heatmap overlays (:mod:`.overlay`) and matplotlib figures (:mod:`.plots`)."""
