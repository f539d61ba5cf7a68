"""Small helpers shared by every area (no MRI or model logic here)."""
