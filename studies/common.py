"""What the study definitions share."""

# The `smoke` presets (tests): micro models on 16x16 clips of 4 frames, a few seconds per run.
SMOKE_OVERRIDES = ["data.moving_digits.num_train=512", "data.moving_digits.num_test=256",
                   "data.moving_digits.canvas=16", "data.moving_digits.digit_size=8", "data.moving_digits.frames=4",
                   "data.moving_digits.speeds=[1.0]", "predictor.embed_dim=32", "predictor.depth=1",
                   "predictor.num_heads=2", "optim.warmup_steps=2", "train.batch_size=8", "train.log_every=2"]
