"""magphase.data"""
