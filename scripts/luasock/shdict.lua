return {dicts = {}}
