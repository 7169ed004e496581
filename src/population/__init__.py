"""Training many runs of one grid as one population: every tensor gets a leading member
dimension (``stacked``), one optimizer steps all members with their own hyper-parameters
(``optim``), and the models' losses from src/losses.py run per member (``step``)."""
