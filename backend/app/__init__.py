"""Goal migration service: moves JSONB action items into treatment_goals."""
