# Elementwise monotone transformers behind the coupling and autoregressive conditioners.
