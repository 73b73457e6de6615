"""ViS4mer long-video classification (Islam & Bertasius 2022): decord frames, cached frozen-backbone
tokens and the multi-scale S4 decoder."""
