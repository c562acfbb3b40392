"""The PyTorch backend: TorchScript (`model.pt`) and torch.export (`model.pt2`) models on CPU or CUDA."""
