"""L5: configuration: ``settings`` (environment variables → options, errors naming the variable),
``credentials`` (which azure-identity credential to build)."""
