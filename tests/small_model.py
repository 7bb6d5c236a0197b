"""The encoder for tests that train for real but check bookkeeping, not capacity.

Resume, seeds, validation cadence, weight averaging, interruption and tune budgets hold
for any model; ResNet-18's 14M parameters (170 MB checkpoints with AdamW's state) cost
those tests 3-4x the time of this 2M-parameter timm encoder.
"""

SMALL_ENCODER = "tu-mobilenetv3_small_050"
