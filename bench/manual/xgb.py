# What users run by hand today: does xgboost train on the GPU in this image?
import json

import numpy as np
import xgboost as xgb

rng = np.random.default_rng(0)
X = rng.normal(size=(20000, 20))
y = (X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(int)
booster = xgb.train({"device": "cuda", "tree_method": "hist", "objective": "binary:logistic"},
                    xgb.DMatrix(X, label=y), num_boost_round=50)
config = json.loads(booster.save_config())
print("xgboost:", xgb.__version__, "device", config["learner"]["generic_param"]["device"])
