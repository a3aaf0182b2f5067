"""The bottom layers: data types, layer lookup, targets, the capture (the only place that touches
``tf.GradientTape``), the compiled engine every method runs on, and post-processing."""
