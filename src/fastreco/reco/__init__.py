"""fastreco.reco"""
