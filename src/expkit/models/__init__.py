"""Models: BaseModel is an nn.Module plus the one step the loop calls.

Imports: torch only.
"""
