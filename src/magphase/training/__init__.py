"""magphase.training"""
