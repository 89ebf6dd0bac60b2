"""ecgbench: a plugin-based adversarial-robustness benchmark for ECG heartbeat classification."""
__version__ = "0.1.0"
__all__ = ["__version__"]
