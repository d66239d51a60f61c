"""Magnification prediction from pixels (Hagnifinder)."""
