"""Scripts that train the small models qlisten embeds under assets/models/ (reproducible from a seed)."""
