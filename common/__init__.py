"""What every stage shares: the wire protocol, socket helpers, the stage runtime and stats.

This is deliberately the only code the stages share; anything stage-specific lives in its stage.
"""
