"""What a run shows on the console: the config tree at its start, progress while it trains, the model summary once
the finetune schedule has frozen what it freezes, and a one-screen summary at its end."""
