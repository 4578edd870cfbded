"""fastreco.evaluate"""
