"""Data stages: dataset adapters → manifest → duplicates → splits → training arrays."""
