"""The web suite's dynamic appliance: the microblog (unikernel/apps/microblog)."""
