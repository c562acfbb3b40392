"""Model building blocks whose implementation the runner can swap (plain torch now, Triton kernels later)."""
