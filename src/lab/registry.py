"""The Experiment Registry: one line per experiment, "id": "module:Class", imported lazily."""

EXPERIMENTS: dict[str, str] = {
    "mnist": "lab.experiments.mnist:MnistExperiment",
    "fashion_cnn": "lab.experiments.fashion_cnn:FashionCnnExperiment",
    "diabetes": "lab.experiments.diabetes:DiabetesExperiment",
    "breast_cancer": "lab.experiments.breast_cancer:BreastCancerExperiment",
    "char_lm": "lab.experiments.char_lm:CharLMExperiment",
    "fashion_aug": "lab.experiments.fashion_aug:FashionAugExperiment",
}
