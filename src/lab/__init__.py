"""The researcher's code: experiments, models and datasets built on expkit."""
