"""magphase.evaluation"""
