"""MRI maths: centred FFTs, complex helpers, coil sensitivities and combination, masks, metrics."""
