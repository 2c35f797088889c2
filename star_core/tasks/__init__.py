"""Inner problems: models, datasets (tensorflow-datasets + embedded), and the task registry."""
