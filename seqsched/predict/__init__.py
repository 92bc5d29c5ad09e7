"""Length predictors: constant (vanilla), oracle, and learned kinds."""
