"""magphase.simulate"""
