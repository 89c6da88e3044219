"""Rollout strategies behind one interface (base.Strategy), one module each."""
